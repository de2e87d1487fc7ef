#!/usr/bin/env bash
# Idempotent set-up for `make demo` and `make test` on Debian 12.
#
#   1. System packages: SoftHSM2, redis-server, OpenSC (pkcs11-tool), OpenSSL,
#      Prometheus (promtool) and PostgreSQL (initdb/pg_ctl for private test
#      clusters). Detected by their binaries; installed with apt-get when
#      missing and running as root, otherwise the exact command is printed.
#   2. Python: .venv (Python >= 3.11) with `pip install -e '.[dev]'`, skipped
#      while .venv/.installed-<sha256 of pyproject.toml> exists.
#
# Prints nothing when there is nothing to do. PYTHON=/path/to/python3.x picks
# the interpreter used to create .venv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------- python ----

# version_ok PY: true when PY runs and is Python >= 3.11.
version_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo unknown; }

# The interpreter that creates .venv: $PYTHON if set, else the first of
# python3, python3.13, python3.12, python3.11 that is >= 3.11.
check_python_env() {
    [[ -n ${PYTHON:-} ]] || return 0
    command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON: not found"
    version_ok "$PYTHON" || die "Python >= 3.11 is required; PYTHON=$PYTHON is $(version_of "$PYTHON")"
}
find_python() {
    local c
    for c in ${PYTHON:-python3 python3.13 python3.12 python3.11}; do
        if command -v "$c" >/dev/null 2>&1 && version_ok "$c"; then
            command -v "$c"
            return
        fi
    done
    return 1
}

# ------------------------------------------------------ system packages ----

missing=()
want() {  # want PACKAGE: add once
    local p
    for p in "${missing[@]}"; do [[ $p == "$1" ]] && return; done
    missing+=("$1")
}
need_cmd() { command -v "$1" >/dev/null 2>&1 || want "$2"; }
need_file() { [[ -e $1 ]] || want "$2"; }
need_pg() {  # initdb and pg_ctl of any installed major version
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null &&
        compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || want postgresql
}

check_system() {
    missing=()
    need_file /usr/lib/softhsm/libsofthsm2.so softhsm2
    need_cmd softhsm2-util softhsm2
    need_cmd redis-server redis-server
    need_cmd pkcs11-tool opensc
    need_cmd openssl openssl
    need_cmd promtool prometheus
    need_cmd chromium chromium  # headless browser test of the public repository page
    need_pg
    PY=
    if [[ ! -x $VENV/bin/python ]]; then
        check_python_env
        if PY=$(find_python); then
            # Debian splits venv/ensurepip out of the interpreter package.
            if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
                case $(readlink -f "$PY") in
                    /usr/bin/python3.*) want "python$(version_of "$PY")-venv" ;;
                    *) die "$PY cannot create a virtual environment (no ensurepip/venv module)" ;;
                esac
            fi
        elif command -v python3 >/dev/null 2>&1; then
            die "Python >= 3.11 is required; python3 is $(version_of python3). Install Python 3.11 or later, or set PYTHON=/path/to/python3.x"
        else
            want python3
            want python3-venv
        fi
    fi
}

# Undo what install_packages put in place, and only that.
created=()
cleanup() {
    local i
    for ((i = ${#created[@]} - 1; i >= 0; i--)); do
        if [[ -d ${created[i]} ]]; then
            rmdir "${created[i]}" 2>/dev/null || true
        else
            rm -f "${created[i]}"
        fi
    done
    created=()
}

install_packages() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # Start no services while installing (redis-server, prometheus and a
    # PostgreSQL cluster would otherwise start and take ports).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# certfactory bootstrap: start no services during apt-get install\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created+=(/usr/sbin/policy-rc.d)
    fi

    # Only initdb/pg_ctl are needed (tests run private clusters): ask
    # postgresql-common not to create the "main" cluster, which would take
    # port 5432 (or 5433 when a server already runs) and start at boot.
    local p d=/etc/postgresql-common
    for p in "${missing[@]}"; do
        if [[ $p == postgresql ]]; then
            [[ -d $d ]] || { mkdir "$d"; created+=("$d"); }
            [[ -d $d/createcluster.d ]] || { mkdir "$d/createcluster.d"; created+=("$d/createcluster.d"); }
            if [[ ! -e $d/createcluster.d/zz-certfactory-bootstrap.conf ]]; then
                echo 'create_main_cluster = false' >"$d/createcluster.d/zz-certfactory-bootstrap.conf"
                created+=("$d/createcluster.d/zz-certfactory-bootstrap.conf")
            fi
        fi
    done

    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}"

    cleanup
    trap - EXIT INT TERM
}

check_system
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        {
            echo "bootstrap: error: missing system packages: ${missing[*]}"
            echo "Install them as root, then run this again:"
            echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
        } >&2
        exit 1
    fi
    install_packages
    check_system
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
fi

# ------------------------------------------------------------------ venv ----

if [[ ! -x $VENV/bin/python ]]; then
    [[ -n $PY ]] || PY=$(find_python) || die "Python >= 3.11 is required"
    say "creating .venv with $PY (Python $(version_of "$PY"))"
    "$PY" -m venv "$VENV"
fi

stamp=$VENV/.installed-$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -e $stamp ]]; then
    version_ok "$VENV/bin/python" ||
        die ".venv has Python $(version_of "$VENV/bin/python"); Python >= 3.11 is required: rm -rf .venv and run again (PYTHON=/path/to/python3.x to choose one)"
    say "installing certfactory into .venv (pip install -e '.[dev]')"
    # -qq: errors only (a fresh install is otherwise noisy); PYTHONWARNINGS hides
    # setuptools' note on editable installs of a flat layout.
    PYTHONWARNINGS=ignore::UserWarning "$VENV/bin/python" -m pip install -qq --disable-pip-version-check -e '.[dev]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
