// Bundled by scripts/vendor.sh into Public/vendor/xterm.<hash>.js (an ES module).
import { Terminal } from "xterm/lib/public/Terminal.js";
import * as fit from "xterm/lib/addons/fit/fit.js";
Terminal.applyAddon(fit);
export { Terminal };
