"""HTTP service of the kiosk (Starlette on uvicorn): /healthz, the ask endpoint and a one-page
form."""
