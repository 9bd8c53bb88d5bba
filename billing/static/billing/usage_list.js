// The usage records list: a model name cut by usage_list.css shows in full on hover.
document.addEventListener("DOMContentLoaded", () => {
  for (const cell of document.querySelectorAll("#result_list td.field-requested_model")) {
    cell.title = cell.textContent;
  }
});
