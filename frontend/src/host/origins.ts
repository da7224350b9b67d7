// Where each session frame is loaded from.
//
// A browser speaking HTTP/1.1 opens at most six connections to one host, and
// every frame of a page shares them. Each session holds one of them for its
// long event stream, so a seventh session on one host would wait forever
// for a connection, and so would every call of the first six beyond their
// stream. Loading each frame from its own host name gives each its own six:
// session N loads from sN.localhost, and every *.localhost name reaches the
// loopback address in Chromium and Firefox.
//
// That trick only works when the page itself comes from this machine
// (localhost, a *.localhost name or a loopback address). Served from any
// other host, the frames load from the page's own host, and then at most
// five sessions work at once over HTTP/1.1; serve the gateway behind an
// HTTP/2 proxy (one connection carries every stream) or give it one wildcard
// DNS name per session to lift the limit.

const loopbackHosts = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** isLocal tells whether hostname names this machine. */
export function isLocal(hostname: string): boolean {
  return loopbackHosts.has(hostname) || hostname.endsWith(".localhost");
}

/** sessionURL returns the address of session n's page, given the host page's location. */
export function sessionURL(n: number, location: Location): string {
  if (!isLocal(location.hostname)) {
    return new URL("window.html", location.href).href;
  }
  const port = location.port === "" ? "" : `:${location.port}`;
  return `${location.protocol}//s${n}.localhost${port}/window.html`;
}
