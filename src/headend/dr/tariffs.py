"""Tariff versions kept in a data directory (an adapter: files, durably).

Layout: ``<root>/tariffs/<tariff_id>/<version>.yaml``, each the YAML text that was
loaded, as given (so ``headend tariff show`` prints what was loaded). A file is written
to a temp name, fsync'd and renamed (:func:`headend.store.fs.publish`), under a short
lock on ``<root>/tariffs/.lock``, so a crash leaves the previous versions and no half
file, and two loads at once are taken one after the other.

Versioning (checked under the lock):

* a version already stored with the same content: nothing is written (``unchanged``);
* the same version with other content: refused (give the change a new version);
* a new version must be above every stored version of the tariff, and effective
  strictly later than the latest one; earlier versions are kept, and each applies
  until the next one's ``effective_from``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import yaml

from headend.dr.tariff import Tariff, parse_tariff
from headend.errors import ConfigError, StorageError
from headend.store.fs import locked, publish

__all__ = ["LoadResult", "TariffStore"]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What :meth:`TariffStore.load` did with one version."""

    tariff: Tariff
    status: Literal["stored", "unchanged"]
    path: Path


class TariffStore:
    """The tariffs of one data directory (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.dir = Path(root) / "tariffs"

    def _file(self, tariff_id: str, version: int) -> Path:
        return self.dir / tariff_id / f"{version}.yaml"

    def load(self, text: str, *, source: str = "tariff") -> LoadResult:
        """Validate the YAML ``text`` of one version and store it durably.

        Raises ConfigError (bad file, or a version that does not fit the stored ones)
        or StorageError (the file could not be written).
        """
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot read tariff file {source}: "
                              f"{str(exc).splitlines()[0]}") from exc
        t = parse_tariff(doc, source=source)
        with locked(self.dir / ".lock", what="the tariffs"):
            have = self.versions(t.tariff_id)
            path = self._file(t.tariff_id, t.version)
            same = [v for v in have if v.version == t.version]
            if same:
                if same[0].canonical() == t.canonical():
                    return LoadResult(t, "unchanged", path)
                raise ConfigError(f"{source}: version: tariff {t.tariff_id} version "
                                  f"{t.version} is stored with other content; give the "
                                  "change a new version")
            if have and t.version < have[-1].version:
                raise ConfigError(f"{source}: version: {t.version} is below the latest "
                                  f"stored version {have[-1].version} of {t.tariff_id}")
            if have and t.effective_from <= have[-1].effective_from:
                raise ConfigError(
                    f"{source}: effective_from: {t.effective_from} is not after "
                    f"{have[-1].effective_from}, when version {have[-1].version} of "
                    f"{t.tariff_id} took effect")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode("utf-8")

            def write(f: IO[bytes]) -> None:
                f.write(data)

            publish(path, write)
        return LoadResult(t, "stored", path)

    def ids(self) -> list[str]:
        """Tariff ids with at least one version, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(p.name for p in self.dir.iterdir()
                      if p.is_dir() and any(p.glob("*.yaml")))

    def versions(self, tariff_id: str) -> list[Tariff]:
        """Every stored version of ``tariff_id``, by version (empty if none)."""
        d = self.dir / tariff_id
        if not d.is_dir():
            return []
        out = []
        for p in d.glob("*.yaml"):
            if not p.stem.isdigit():
                continue
            out.append(parse_tariff(yaml.safe_load(self._read(p)), source=str(p)))
        return sorted(out, key=lambda t: t.version)

    def text(self, tariff_id: str, version: int | None = None) -> str:
        """The YAML as loaded, of ``version`` (default the latest); KeyError if none."""
        vs = self.versions(tariff_id)
        if version is None and vs:
            version = vs[-1].version
        if version is None or not any(v.version == version for v in vs):
            raise KeyError(f"no tariff {tariff_id!r}" + ("" if version is None
                                                          else f" version {version}"))
        return self._read(self._file(tariff_id, version))

    @staticmethod
    def _read(p: Path) -> str:
        try:
            return p.read_text(encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"could not read {p}: {exc}") from exc
