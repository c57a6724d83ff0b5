"""What a user reads and watches: console and progress lines, the report, plots, TensorBoard."""
