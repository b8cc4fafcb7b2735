"""The peer protocol's parts; `runtime.core.peer_protocol.PeerProtocol` puts them together."""
