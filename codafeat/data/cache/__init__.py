"""The caches: decoded images for pretraining, DICOM tags, and embeddings.

* :mod:`~codafeat.data.cache.decoded`: the decoded-image cache of pretraining, a set of
  content-defined shards (:mod:`~codafeat.data.cache.shards`) built in the foreground
  (:mod:`~codafeat.data.cache.shard_build`, decoding in a process pool:
  :mod:`~codafeat.data.cache.decode_pool`) or by a background process
  (:mod:`~codafeat.data.cache.background_fill`), with leases that keep one run's cleanup
  off the shards another live run uses (:mod:`~codafeat.data.cache.leases`);
* :mod:`~codafeat.data.cache.tag_index`: the DICOM header values of each file, read once;
* :mod:`~codafeat.data.cache.embeddings`: embeddings keyed on the weights and the image.

**Two ideas of image identity, on purpose.** The decoded cache and the tag index know a
file by its path, size and modification time (:func:`~codafeat.data.cache.shards.identity`):
a second run over a million files must start without reading them, and one ``stat`` per
file is all it can afford; an edited file changes its size or time and is read again. The
embedding cache knows an image by its *content* (a hash of the bytes,
:func:`~codafeat.data.cache.embeddings.item_key`): it serves cross-validation folds,
copies, renamed files and in-memory arrays alike, and it reads each image anyway to embed
it, so hashing its bytes costs little beside the forward pass.
"""
