# shellcheck shell=bash
# Sourced by scripts/up and scripts/test: makes sure uv and the locked environment exist.
# Needs only python3 (3.11+) and pip; everything else comes from uv.lock.
export UV_PYTHON_DOWNLOADS=never
if command -v uv >/dev/null 2>&1; then
    UV=(uv)
elif python3 -m uv --version >/dev/null 2>&1; then
    UV=(python3 -m uv)
else
    echo "installing uv (the package manager that reads uv.lock) with pip ..." >&2
    python3 -m pip install --quiet --disable-pip-version-check uv
    UV=(python3 -m uv)
fi
"${UV[@]}" sync --frozen --quiet --extra examples --extra plot --extra dask
