// Text a person cannot read whole: every visible element that holds text itself and whose text runs
// past a box that cuts it (its own overflow or ellipsis, an ancestor's hidden overflow, or a field's
// box that scrolls sideways), as "tag#id.class: text (how)". Text in a viewer that scrolls (a
// gallery, a table) is not cut: scrolling reaches it.
() => {
  // a box that cuts what runs past it (a scrolling box does not: its content is reachable)
  const clips = (style, axis) => {
    const o = axis === "x" ? style.overflowX : style.overflowY;
    return o === "hidden" || o === "clip";
  };
  const scrolls = (style, axis) => {
    const o = axis ? (axis === "x" ? [style.overflowX] : [style.overflowY]) : [style.overflowX, style.overflowY];
    return o.some((v) => v === "auto" || v === "scroll");
  };
  const name = (el) => {
    const id = el.id ? `#${el.id}` : "";
    const cls = typeof el.className === "string" && el.className ? `.${el.className.trim().split(/\s+/)[0]}` : "";
    return `${el.tagName.toLowerCase()}${id}${cls}`;
  };
  const found = [];
  for (const el of document.querySelectorAll("body *")) {
    const text = [...el.childNodes]
      .filter((n) => n.nodeType === Node.TEXT_NODE)
      .map((n) => n.textContent)
      .join("")
      .trim();
    if (!text || !el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) continue;
    const box = el.getBoundingClientRect();
    if (box.width < 2 || box.height < 2) continue; // screen-reader-only text, collapsed elements
    const style = getComputedStyle(el);
    const how = [];
    if (el.scrollWidth > el.clientWidth + 1 && (clips(style, "x") || style.textOverflow === "ellipsis")) how.push("cut at its right edge");
    if (el.scrollHeight > el.clientHeight + 1 && clips(style, "y")) how.push("cut at its bottom");
    // the text's own extent against its ancestors, up to the first that scrolls
    const range = document.createRange();
    range.selectNodeContents(el);
    const ink = range.getBoundingClientRect();
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const s = getComputedStyle(a);
      const r = a.getBoundingClientRect();
      const pastX = ink.right > r.right + 1 || ink.left < r.left - 1;
      const pastY = ink.bottom > r.bottom + 1 || ink.top < r.top - 1;
      if ((clips(s, "x") && pastX) || (clips(s, "y") && pastY)) { how.push(`cut by ${name(a)}`); break; }
      if (scrolls(s)) {
        // a field's box that scrolls sideways to show its label: cut for the reader; a viewer that
        // scrolls (a gallery, a table, a long text) shows the rest when scrolled: stop here
        if (pastX && scrolls(s, "x") && !a.querySelector("table, img, canvas, video")) how.push(`cut by ${name(a)} (scrolls sideways)`);
        break;
      }
    }
    if (how.length) found.push(`${name(el)}: ${text.slice(0, 60)} (${how.join(", ")})`);
  }
  return found;
}
