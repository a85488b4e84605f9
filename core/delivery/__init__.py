"""One delivery of one task: claim, lease renewal, the model call, store, complete; the
retry rule and the staged answers."""
