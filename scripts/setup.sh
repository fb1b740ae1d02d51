#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian 12 machine with Python 3.11:
# the Debian tools the tests drive for real (libiscsi, qemu, mt-st, mtx, sg3_utils, tgt ...),
# a virtualenv in .venv, and the project itself in editable mode with its test extras.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv          # the virtualenv
  python3-dev           # Python.h: builds the optional C extensions (setup.py)
  libssl-dev            # libcrypto's sha256 for the small-file run in _paxfast (setup.py)
  libsqlite3-dev        # the catalog insert beside the writing pass in _paxfast (setup.py)
  libiscsi-bin          # iscsi-ls / iscsi-inq: real initiators in the tests
  libiscsi-dev          # the benchmark's one-command-at-a-time libiscsi client
  tgt                   # the peer we benchmark against (tgt's --bstype ssc tape emulation)
  qemu-system-x86       # boots Debian's kernel as a real st/ch initiator in the e2e tests
  qemu-block-extra      # qemu's libiscsi block driver (-drive driver=iscsi)
  busybox-static        # the guest's userland
  cpio                  # packs the guest's initramfs
  mt-st mtx sg3-utils   # the guest's tape tools (copied into the initramfs)
  stenc                 # drive encryption from the guest (SECURITY PROTOCOL IN/OUT)
  autoconf automake libtool pkg-config libfuse-dev libxml2-dev libicu-dev icu-devtools \
  uuid-dev libsnmp-dev  # build IBM's LTFS (../shared/third_party) for the LTFS e2e test
  fuse                  # fusermount, copied into the LTFS e2e guest (libfuse-dev does not pull it in)
  tar zstd              # GNU tar in the guest; tar | zstd as a backup peer
  restic                # backup benchmark peer
  sqlite3               # inspecting catalogs by hand
  postgresql            # a real server for the postgresql translator: tests and bench
  gcc                   # builds the benchmark client
  chromium              # renders the status page (vtl web) headless in its test
  ceph-mon ceph-osd radosgw ceph-common  # a real S3 (single-node Ceph) for the store's S3 tier test
  bacula-sd             # Bacula's btape and mtx-changer script, run in the full-userland e2e guest
  amanda-server amanda-client  # Amanda (chg-robot, amdump, amfetchdump) in the same guest
  libencode-locale-perl # Amanda's perl needs Encode::Locale; Debian's amanda does not declare it
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
  else
    echo "setup: installing Debian packages: ${missing[*]}"
    # Package scripts must not start daemons here (bacula-sd, and exim4 and openbsd-inetd
    # that Amanda pulls in; the tests run their programs in a guest, never as services):
    # a policy-rc.d that refuses every start, for the length of the install only.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
      $SUDO chmod 755 /usr/sbin/policy-rc.d
      trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstalled when the package's metadata or a C extension's source changes (an editable
# install builds the extensions once, in place).
stamp=.venv/.installed-$(cat pyproject.toml setup.py tape_formats/*.c tape_formats/archive/*.c tape_formats/store/*.c vtl/*.c vtl/*.h | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test,postgresql]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
