"""The dispatcher's console: the live fleet on a map in a browser, and the HTTP API.

``docs/console.md`` (the page, roles, what "live" and "late" mean) and ``docs/api.md`` (every
route, with curl examples). Modules: :mod:`.view` (the pure picture of the fleet),
:mod:`.eta` (predicted arrivals), :mod:`.auth` (users, tokens, sessions), :mod:`.gate` (size
limits, rate limits, CSRF, security headers), :mod:`.live` (the broker feed and the live
stream), :mod:`.app` (the routes), :mod:`.server` (running it all on one loop).
"""
