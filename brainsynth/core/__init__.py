"""The engine. It knows no concrete network, loss or ordering; plugins provide those."""
