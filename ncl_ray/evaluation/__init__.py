"""Evaluation: embedding a split on Ray, scoring with every test-time normalisation, the exported search index."""
