"""Binary caches: share built store paths instead of rebuilding them (docs/caches.md).

One module per concept:

* :mod:`~mlpkg.cache.transport` — where a cache's files live (``file://``, ``http(s)://``
  with PUT, ``s3://``): get, stream, has, put, list, delete. Nothing else does I/O with a
  cache.
* :mod:`~mlpkg.cache.keys` — ed25519 signing keys and the trusted keys.
* :mod:`~mlpkg.cache.format` — the versioned cache layout: ``cache-info.json``, one
  signed info file per store path, its listing, and the fingerprint that is signed.
* :mod:`~mlpkg.cache.chunks` — a store path to content-defined chunks (FastCDC, zstd),
  and chunks back into a tree.
* :mod:`~mlpkg.cache.restore` — objects back into a tree, streamed and checked;
  :mod:`~mlpkg.cache.reuse` — chunks this store already holds, read instead of fetched.
* :mod:`~mlpkg.cache.push` and :mod:`~mlpkg.cache.substitute` — uploading closures and
  making paths valid from caches; :mod:`~mlpkg.cache.bundle` and
  :mod:`~mlpkg.cache.bundle_import` — the same through one file, for offline machines.
* :mod:`~mlpkg.cache.check` and :mod:`~mlpkg.cache.collect` — ``mlpkg cache verify`` and
  ``mlpkg cache gc``.
"""
