"""Jobs as operators see them: submit, edit, options, schedule, validation, uploads,
search, export, reports, retention, audit, notify."""
