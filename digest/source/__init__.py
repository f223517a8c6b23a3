"""Getting the list: fetch bytes over HTTP (`fetch`), read papers out of them (`parse`),
and choose between the page and the API (`listing`)."""
