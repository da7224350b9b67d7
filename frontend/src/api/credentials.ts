// The signed-in user of this page and the token that proves it. Each session
// page is its own browsing context, so one module-level value is enough.

/** Credentials are a user's name and the bearer token SignIn gave them. */
export interface Credentials {
  readonly name: string;
  readonly token: string;
  /** When the gateway stops accepting the token. */
  readonly expires: Date;
}

let current: Credentials | undefined;

/** setCredentials replaces the page's credentials; undefined signs out. */
export function setCredentials(credentials: Credentials | undefined): void {
  current = credentials;
}

/** bearerToken returns the token to send with calls, if any. */
export function bearerToken(): string | undefined {
  return current?.token;
}

/**
 * needsSignIn tells whether name has no token, or one that expires within
 * the next minute.
 */
export function needsSignIn(name: string, now = Date.now()): boolean {
  return current?.name !== name || current.expires.getTime() - now < 60_000;
}
