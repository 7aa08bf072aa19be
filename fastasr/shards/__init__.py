"""The shard format (`fastasr-shards/1`): the writer, index.json and the durations tables, indexes of foreign
WebDataset shards, and statistics."""
