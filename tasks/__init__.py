"""Task adapters: the offline default ``tweets``, GLUE, SQuAD v1.1 and CoNLL-2003."""
