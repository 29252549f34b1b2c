"""The skip-gram word-embedding trainer: config, corpus, vocabulary, pairs, model, training loop, evaluation."""
