"""What every benchmark needs: processes, /proc readings, the backends and the proxies."""
