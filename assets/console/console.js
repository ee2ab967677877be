// Progressive enhancement only: every page works without it. Print buttons print.
document.querySelectorAll('[data-print]').forEach(function (b) {
  b.hidden = false;
  b.addEventListener('click', function () { window.print(); });
});
// Back buttons (on error pages) go back to the page and the values just sent.
document.querySelectorAll('[data-back]').forEach(function (b) {
  b.hidden = false;
  b.addEventListener('click', function () { window.history.back(); });
});
