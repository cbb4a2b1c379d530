// Preloaded into the conformance runner (node --import): the suite's client has no header
// option, so every request it sends to OPSGATE_URL's origin carries the bearer token.
import { Agent, setGlobalDispatcher } from "undici";

const origin = new URL(process.env.OPSGATE_URL).origin;
const authorization = `Bearer ${process.env.OPSGATE_TOKEN}`;

function withToken(headers) {
  if (Array.isArray(headers)) return [...headers, "authorization", authorization];
  if (headers && typeof headers[Symbol.iterator] === "function") {
    return [...[...headers].flat(), "authorization", authorization];
  }
  return { ...headers, authorization };
}

setGlobalDispatcher(
  new Agent().compose((dispatch) => (options, handler) => {
    const target = options.origin ? new URL(String(options.origin)).origin : null;
    return dispatch(target === origin ? { ...options, headers: withToken(options.headers) } : options, handler);
  }),
);
