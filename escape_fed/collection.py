"""Where the Ansible side of escape-fed lives, and the escape.fed collection built from it.

Everything is found through the installed package (``importlib.resources``), never through a
checkout: ``escape_fed/ansible_collections/escape/fed`` is the escape.fed collection (in a
checkout its ``roles`` and ``playbooks`` are links to the top-level folders; a wheel stores
them as files), ``escape_fed/ansible.cfg`` is escape-fed's Ansible configuration and
``escape_fed/inventories`` holds the example federations.

Site admins who run their own Ansible build the collection with :func:`build` (``make
collection``): ``ansible-galaxy collection build`` skips links that point outside the
collection, so a real copy is staged first.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from importlib.resources import files
from pathlib import Path

from escape_fed.errors import OperationFailed

NAMESPACE = "escape"
NAME = "fed"
FQCN = f"{NAMESPACE}.{NAME}"


def package_dir() -> Path:
    """The installed escape_fed package directory."""
    return Path(str(files("escape_fed")))


def collections_dir() -> Path:
    """The directory to put on ANSIBLE_COLLECTIONS_PATH (it holds ``ansible_collections/``)."""
    return package_dir()


def collection_dir() -> Path:
    """The escape.fed collection inside the package."""
    return package_dir() / "ansible_collections" / NAMESPACE / NAME


def roles_dir() -> Path:
    return collection_dir() / "roles"


def playbooks_dir() -> Path:
    return collection_dir() / "playbooks"


def ansible_cfg() -> Path:
    return package_dir() / "ansible.cfg"


def lab_federation() -> Path:
    """The packaged lab federation (the default FILE outside a checkout)."""
    return package_dir() / "inventories" / "lab" / "federation.yaml"


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ("molecule", "__pycache__") or n.endswith(".pyc")}


def stage(dest: Path) -> Path:
    """A real copy of the collection (links followed, no test scenarios) under ``dest``."""
    target = dest / "ansible_collections" / NAMESPACE / NAME
    shutil.copytree(collection_dir(), target, symlinks=False, ignore=_ignored)
    return target


def build(out_dir: Path, ansible_galaxy: str | None = None) -> Path:
    """``ansible-galaxy collection build`` of a staged copy; return the tarball in ``out_dir``."""
    from escape_fed.backends.ansible import ansible_env, executable

    galaxy = ansible_galaxy or executable("ansible-galaxy")
    out_dir = out_dir.resolve()  # ansible-galaxy runs in the staged copy
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ef-collection-") as tmp:
        staged = stage(Path(tmp))
        with ansible_env() as env:
            proc = subprocess.run(
                [galaxy, "collection", "build", "--force", "--output-path", str(out_dir)],
                cwd=staged,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
    if proc.returncode != 0:
        raise OperationFailed(
            f"ansible-galaxy collection build failed:\n{proc.stdout}{proc.stderr}"
        )
    version = _version()
    tarball = out_dir / f"{NAMESPACE}-{NAME}-{version}.tar.gz"
    if not tarball.exists():
        raise OperationFailed(f"ansible-galaxy built no {tarball.name}:\n{proc.stdout}")
    return tarball


def _version() -> str:
    import yaml

    data = yaml.safe_load((collection_dir() / "galaxy.yml").read_text(encoding="utf-8"))
    return str(data["version"])


def main() -> None:
    """``python -m escape_fed.collection [OUT_DIR]``: build the collection, print the tarball."""
    import sys

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("build/collection")
    try:
        print(build(out))
    except OperationFailed as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(exc.code) from None


if __name__ == "__main__":
    main()
