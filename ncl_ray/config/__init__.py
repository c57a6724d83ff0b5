"""The run configuration: typed schema (defaults, YAML diffs, overrides), its rules, its annotated listing. No Ray."""
