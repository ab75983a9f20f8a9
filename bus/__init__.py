"""The message bus: message types, transport helpers and the XSUB/XPUB proxy process."""
