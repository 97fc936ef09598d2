"""HTTP (FastAPI) and CLI: parse, call a domain service, map the result. No domain rules here."""
