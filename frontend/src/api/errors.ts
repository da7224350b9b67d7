import { Code, ConnectError } from "@connectrpc/connect";

/** describeError turns a failed call into a sentence for people. */
export function describeError(err: unknown): string {
  const ce = ConnectError.from(err);
  switch (ce.code) {
    case Code.Unavailable:
    case Code.Unknown:
      return "The server cannot be reached.";
    case Code.DeadlineExceeded:
      return "The server took too long to answer.";
    case Code.Unauthenticated:
      return "Your sign-in expired.";
    case Code.ResourceExhausted:
      return `The server is busy: ${ce.rawMessage}`;
    default:
      return ce.rawMessage || ce.message;
  }
}

/** isRetryable tells whether a call may work if tried again later. */
export function isRetryable(err: unknown): boolean {
  const code = ConnectError.from(err).code;
  return (
    code !== Code.InvalidArgument &&
    code !== Code.PermissionDenied &&
    code !== Code.Unimplemented &&
    code !== Code.FailedPrecondition
  );
}
