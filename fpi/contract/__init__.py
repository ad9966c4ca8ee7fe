"""The contracts every layer shares: errors and exit codes, trace format v1, the records-v1 columns, the metrics file, YAML documents, atomic files."""
