# Sourced by scripts: installs missing Debian packages (as root, non-interactively) or says what to install.
ensure_packages() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "# installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
    return 1
  fi
}

# Python with venv support (Debian's python3 needs python3-venv; a pyenv python has it).
ensure_python_venv() {
  if command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then return 0; fi
  ensure_packages python3 python3-venv
}

# Installs what it can of optional tools (promtool, git…); never fails.
ensure_optional_packages() {
  for p in "$@"; do ensure_packages "$p" 2>/dev/null || echo "# optional package $p not installed" >&2; done
}
