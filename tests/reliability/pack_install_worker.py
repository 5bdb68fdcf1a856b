"""Install worker for the crash test: a zygote that forks one child per install request.

Started once with exec (a fresh interpreter with no threads, so forking is safe); it
pre-imports the install path, then for each pack path read from stdin forks a child that
installs it, prints the child's pid (the test SIGKILLs that pid at a random moment) and
then the child's wait status. A round therefore costs milliseconds, not an interpreter start.

usage: python pack_install_worker.py PACKS_DIR SETTINGS_JSON
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    import runtime.knowledge.store  # noqa: F401 - warm the import before forking
    from runtime.packs.format import EmbeddingBinding
    from runtime.packs.install import PackInstaller, PackSettings

    packs = Path(sys.argv[1])
    raw = json.loads(sys.argv[2])
    settings = PackSettings(
        configured_keys=raw["keys"],
        binding=EmbeddingBinding(**raw["binding"]),
        locales=tuple(raw["locales"]),
    )
    for line in sys.stdin:
        pack = line.strip()
        if not pack:
            continue
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                PackInstaller(packs, settings).install_file(Path(pack))
                code = 0
            except BaseException as exc:  # noqa: BLE001 - reported through the exit code
                sys.stderr.write(f"install failed: {exc}\n")
            finally:
                os._exit(code)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)


if __name__ == "__main__":
    main()
