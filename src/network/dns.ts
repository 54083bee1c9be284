// The pod's DNS settings as the guest needs them: CRI writes the sandbox's resolv.conf from the
// PodSandboxConfig's DNSConfig (or the node's); containers in the guest must see the same file.

export interface DnsConfig {
  nameservers: string[];
  searches: string[];
  options: string[];
}

const MAX_LINE = 4096;

export function parseResolvConf(text: string): DnsConfig {
  const dns: DnsConfig = { nameservers: [], searches: [], options: [] };
  for (const raw of text.split("\n")) {
    const line = raw
      .slice(0, MAX_LINE)
      .replace(/[#;].*$/, "")
      .trim();
    const [key, ...rest] = line.split(/\s+/);
    if (key === "nameserver" && rest[0]) dns.nameservers.push(rest[0]);
    else if (key === "search" || key === "domain") dns.searches = rest.filter(Boolean);
    else if (key === "options") dns.options.push(...rest.filter(Boolean));
  }
  return dns;
}
