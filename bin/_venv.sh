# Sourced by bin/dovecote and bin/test: make sure .venv exists and holds this checkout.
# Reinstalls only when pyproject.toml, setup.py or a C accelerator's source changes, so
# repeated runs start at once. (The accelerators are optional: without a compiler the install
# goes on without them, on the pure-Python code.)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "dovecote needs Python 3.11 or newer (found: $("$py" --version 2>&1))" >&2; exit 2; }
venv="$root/.venv"
stamp="$venv/.dovecote-installed"
want="$(cat "$root/pyproject.toml" "$root/setup.py" "$root"/src/dovecote/*/*.c "$root"/src/dovecote/*/*/*.c | cksum) extras=${DOVECOTE_EXTRAS:-}"
have=$(cat "$stamp" 2>/dev/null || true)
# A venv installed with the test extras also serves plain use.
case "$have" in
    "$want"|"$want"test) fresh=yes ;;
    *) fresh=no ;;
esac
if [ ! -x "$venv/bin/python" ] || [ "$fresh" = no ]; then
    echo "dovecote: preparing $venv (first use only) ..." >&2
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root${DOVECOTE_EXTRAS:+[$DOVECOTE_EXTRAS]}" >&2
    echo "$want" > "$stamp"
fi
