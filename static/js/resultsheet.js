// The result sheet page: its Print button (inline handlers are not allowed by the CSP).

document.getElementById("sheet-print")?.addEventListener("click", () => window.print());
