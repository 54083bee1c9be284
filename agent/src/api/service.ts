// cove.agent.v1.Agent on a ttrpc server: decoded requests in, Agent calls, responses out. The
// request and response types are the .proto's (src/proto/agent.ts). This is the agent's service
// edge: what the Agent throws leaves with its gRPC code (src/common/grpc-status.ts).
import { withGrpcStatus } from "../../../src/common/grpc-status.ts";
import type { AgentHandlers } from "../../../src/proto/agent.ts";
import type { Agent } from "../agent.ts";

export function agentService(agent: Agent): AgentHandlers {
  const empty = {};
  return withGrpcStatus<AgentHandlers>({
    Check: async () => agent.check(),
    CreateSandbox: async (r) => {
      await agent.createSandbox(r);
      return empty;
    },
    DestroySandbox: async () => {
      await agent.destroySandbox();
      return empty;
    },
    CreateContainer: async (r) => ({ pid: await agent.createContainer(r) }),
    StartContainer: async (r) => ({ pid: await agent.startContainer(r.container_id) }),
    RemoveContainer: async (r) => {
      await agent.removeContainer(r.container_id, r.force);
      return empty;
    },
    PauseContainer: async (r) => {
      await agent.pause(r.container_id, true);
      return empty;
    },
    ResumeContainer: async (r) => {
      await agent.pause(r.container_id, false);
      return empty;
    },
    UpdateContainer: async (r) => {
      await agent.update(r);
      return empty;
    },
    StateContainer: async (r) => agent.state(r.container_id),
    ListPids: async (r) => ({ pids: agent.listPids(r.container_id) }),
    StatsContainer: async (r) => ({ metrics: agent.stats(r.container_id) }),
    ExecProcess: async (r) => ({ pid: await agent.execProcess(r) }),
    SignalProcess: async (r) => {
      await agent.signalProcess(r);
      return empty;
    },
    WaitProcess: async (r, ctx) => ({ ...(await agent.waitProcess(r, ctx.signal)) }),
    DeleteProcess: async (r) => ({ ...agent.deleteProcess(r) }),
    ResizeTty: async (r) => {
      agent.resizeTty(r);
      return empty;
    },
    CloseStdin: async (r) => {
      agent.closeStdin(r);
      return empty;
    },
    ConfigureNetwork: async (r) => ({ interfaces: agent.configureNetwork(r) }),
    SyncFiles: async (r) => {
      agent.syncFiles(r);
      return empty;
    },
    GetOOMEvent: async (_r, ctx) => ({ container_id: await agent.getOomEvent(ctx.signal) }),
  });
}
