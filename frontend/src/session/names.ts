// The rules for user names, the same as the gateway's: 1 to 64 bytes of
// UTF-8 with no control characters and no '/'.

const maxNameBytes = 64;
const encoder = new TextEncoder();

/** validateName returns why name is not a valid user name, or undefined. */
export function validateName(name: string): string | undefined {
  if (name.length === 0) {
    return "Enter a name.";
  }
  if (/\p{Cs}/u.test(name)) {
    return "The name holds a character that cannot be encoded.";
  }
  if (encoder.encode(name).length > maxNameBytes) {
    return `Use at most ${maxNameBytes} bytes (fewer for accented letters and emoji).`;
  }
  if (/\p{Cc}/u.test(name)) {
    return "The name cannot hold control characters.";
  }
  if (name.includes("/")) {
    return "The name cannot contain “/”.";
  }
  return undefined;
}
