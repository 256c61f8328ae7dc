// The login page: say so when the last token was refused; come back to the page asked for.
const params = new URLSearchParams(location.search);
if (params.has("failed")) document.getElementById("failed").hidden = false;
if (params.get("next")) document.getElementById("next").value = params.get("next");
