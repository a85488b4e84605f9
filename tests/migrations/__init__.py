"""The first released schema (baseline_v9.sql) and the catalog reader the migration tests
compare databases with."""
