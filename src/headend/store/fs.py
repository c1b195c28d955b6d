"""Durable file primitives for data kept beside the store (outbox, VEE versions, weather).

The public face of the store's own file discipline (temp file, fsync, atomic rename,
directory fsync; short ``flock`` locks; removal of a crashed writer's temp files), so that
every file in a data directory is published the same way. Raises
:class:`~headend.errors.StorageError` where the store does.
"""

from headend.store._fs import fsync_dir, locked, publish, publish_path, remove_temp_files

__all__ = ["fsync_dir", "locked", "publish", "publish_path", "remove_temp_files"]
