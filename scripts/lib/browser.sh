# The headless browser the console tests (tests/all/console.rs) drive, sourced
# by scripts/test: Debian's Chromium and its chromedriver, from the
# distribution's packages (never a browser download). Installed with apt-get
# when missing; when that cannot be done, it fails at once with the command to run.

browser_install() {
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        return 0
    fi
    local install="apt-get install -y chromium chromium-driver"
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "scripts/test: Chromium and chromedriver are missing for the console tests: $install" >&2
        exit 1
    fi
    echo "scripts/test: installing Chromium and chromedriver for the console tests ($install)" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; then
        # A fresh machine has no package lists yet.
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
            || { echo "scripts/test: could not install Chromium: $install" >&2; exit 1; }
    fi
}
