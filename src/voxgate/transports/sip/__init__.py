"""SIP calls: a sans-IO message parser, user agent (transactions, dialogs) and SDP for G.711,
and the asyncio UDP endpoint that drives them."""
