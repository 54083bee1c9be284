// The host side of the guest agent: typed ttrpc client and stdio stream plumbing.
export * from "./client.ts";
export { handshake, type StdioStream, stdioHeader } from "./stdio.ts";
