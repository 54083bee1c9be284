// The version reported by `-v` and ConnectResponse.version (kept in step with package.json).
export const VERSION = "0.1.0";
