// cove.agent.v1.Agent on a ttrpc server: request shapes in, Agent calls, response shapes out.
import type { Handler } from "../../../src/ttrpc/index.ts";
import type { Agent } from "../agent.ts";

export const AGENT_SERVICE = "cove.agent.v1.Agent";

// biome-ignore lint/suspicious/noExplicitAny: request shapes are the proto's, decoded by the server.
type Req = any;

export function agentService(agent: Agent): Record<string, Handler<Req, Record<string, unknown>>> {
  const empty = {};
  return {
    Check: async () => agent.check(),
    CreateSandbox: async (r: Req) => {
      await agent.createSandbox(r);
      return empty;
    },
    DestroySandbox: async () => {
      await agent.destroySandbox();
      return empty;
    },
    CreateContainer: async (r: Req) => ({ pid: await agent.createContainer(r) }),
    StartContainer: async (r: Req) => ({ pid: await agent.startContainer(r.container_id) }),
    RemoveContainer: async (r: Req) => {
      await agent.removeContainer(r.container_id, r.force);
      return empty;
    },
    PauseContainer: async (r: Req) => {
      await agent.pause(r.container_id, true);
      return empty;
    },
    ResumeContainer: async (r: Req) => {
      await agent.pause(r.container_id, false);
      return empty;
    },
    UpdateContainer: async (r: Req) => {
      await agent.update(r);
      return empty;
    },
    StateContainer: async (r: Req) => agent.state(r.container_id),
    ListPids: async (r: Req) => ({ pids: agent.listPids(r.container_id) }),
    StatsContainer: async (r: Req) => ({ metrics: agent.stats(r.container_id) }),
    ExecProcess: async (r: Req) => ({ pid: await agent.execProcess(r) }),
    SignalProcess: async (r: Req) => {
      await agent.signalProcess(r);
      return empty;
    },
    WaitProcess: async (r: Req, ctx) => ({ ...(await agent.waitProcess(r, ctx.signal)) }),
    DeleteProcess: async (r: Req) => ({ ...agent.deleteProcess(r) }),
    ResizeTty: async (r: Req) => {
      agent.resizeTty(r);
      return empty;
    },
    CloseStdin: async (r: Req) => {
      agent.closeStdin(r);
      return empty;
    },
    ConfigureNetwork: async (r: Req) => ({ interfaces: agent.configureNetwork(r) }),
    SyncFiles: async (r: Req) => {
      agent.syncFiles(r);
      return empty;
    },
    GetOOMEvent: async (_r: Req, ctx) => ({ container_id: await agent.getOomEvent(ctx.signal) }),
  };
}
