"""Data: sources (Shakespeare, local files, Hugging Face streaming), one-pass preparation into token
shards, document splits, the tokenizer, and the synthetic recall tasks."""
