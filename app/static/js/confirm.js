// Forms with data-confirm ask before they submit (instead of inline onsubmit handlers, which the
// Content-Security-Policy refuses).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm !== undefined) {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }
}, true);
