"""Label Studio, simulated readers, agreement and consensus (DESIGN §2). Imports only `schemas`."""
