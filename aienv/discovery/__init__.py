"""Discovery: how nodes find each other and learn what each shares.

- ``codec``: the signed announcement wire format, pure encode/decode, no I/O;
- ``peers``: the peer table with expiry (pure logic, injectable clock);
- ``interfaces``: choosing the IPv4 interfaces to announce on;
- ``beacon``: the UDP multicast sockets;
- ``dnssd``: DNS-SD (``_aienv._tcp.local.``) through zeroconf;
- ``service``: the asyncio service tying them to the node's state, plus the
  HTTP poller for manually added and DNS-SD-found peers.
"""
