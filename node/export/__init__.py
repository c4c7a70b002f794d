"""Export: the exporter loop and its senders (C-STORE SCU, STOW-RS client, folder)."""
