"""Balancing: which server of a service a new connection goes to.

- :mod:`.pool`: a service's servers and their live state, backup servers, panic mode, slow
  start, session counts; the one object the proxy asks (:class:`~.pool.Pool`);
- :mod:`.member`: one server's state, and the interface every algorithm implements;
- :mod:`.roundrobin`: smooth weighted round-robin (``roundrobin``, the default);
- :mod:`.leastconn`: weighted least connections, ties in round-robin (``leastconn``);
- :mod:`.two_choices`: power of two random choices by weight (``random``);
- :mod:`.source`: consistent hashing of the client IP (``source``);
- :mod:`.heap`: the min-heap with re-keying that round-robin and least connections share.

Everything is deterministic given the injected clock and random source.  A pick is O(log n)
for every algorithm but ``source`` (a ring lookup and a walk past servers that may not be
chosen), and health, weight and session changes are O(log n) too.
"""
