"""Built-in pruning methods, each a plugin module registered through the same hook as third-party code."""
