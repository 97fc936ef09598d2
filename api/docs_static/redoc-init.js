// ReDoc for /redoc, started from a file (no inline script under the app's CSP). The
// standalone bundle comes from the fastapi-offline package: no CDN. Search runs in a blob:
// worker, which the CSP does not allow: it is turned off.
window.addEventListener("DOMContentLoaded", function () {
  Redoc.init("/openapi.json", { disableSearch: true, hideDownloadButton: false },
             document.getElementById("redoc"));
});
