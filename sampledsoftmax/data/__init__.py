"""The data layer, shared by every task: reading a text corpus (plain, .gz/.bz2/.xz, files or directories) into
token ids with a frequency-sorted vocabulary (`corpus`, `vocab`), and the planted synthetic corpus whose Bayes-optimal
cross entropy is known exactly (`synthetic`); the one reader of the user's small text files and the text check of
corpus files (`textfile`), word2vec's subsampling distribution (`subsample`) and the host memory available
(`hostmem`). numpy only; it imports nothing from training, tasks or experiments (docs/ARCHITECTURE.md)."""
