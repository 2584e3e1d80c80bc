// iiif-processor (serverless-iiif's engine: sharp on libvips) behind Node's own http server,
// as the fast peer of bench/perf.py. Serves the files of ROOT at /iiif/{2,3}/{file name}/...
// Image dimensions are read once per file and kept, as serverless-iiif keeps them with the
// object; every image request streams the file through sharp, with no result cache.
//
//   NODE_PATH=bench/.node/node_modules node bench/iiif-processor-server.js PORT ROOT
"use strict";
const fs = require("fs");
const http = require("http");
const path = require("path");
const { Processor } = require("iiif-processor");

const port = Number(process.argv[2]);
const root = path.resolve(process.argv[3]);
const dimensions = new Map();

async function streamResolver({ id }) {
  const file = path.join(root, path.basename(id));
  return fs.createReadStream(file);
}

function dimensionFunction(processor) {
  return async ({ id, baseUrl }) => {
    if (!dimensions.has(id)) {
      dimensions.set(id, await processor.defaultDimensionFunction({ id, baseUrl }));
    }
    return dimensions.get(id);
  };
}

const server = http.createServer(async (req, res) => {
  try {
    const url = `http://127.0.0.1:${port}${req.url}`;
    const processor = new Processor(url, streamResolver, {});
    processor.dimensionFunction = dimensionFunction(processor);
    const result = await processor.execute();
    if (result.type === "content") {
      res.writeHead(200, { "Content-Type": result.contentType });
      res.end(result.body);
    } else if (result.type === "redirect") {
      res.writeHead(302, { Location: result.location });
      res.end();
    } else {
      res.writeHead(result.statusCode || 500, { "Content-Type": "text/plain" });
      res.end(String(result.message));
    }
  } catch (err) {
    res.writeHead(err.statusCode || 500, { "Content-Type": "text/plain" });
    res.end(String(err.message || err));
  }
});
server.keepAliveTimeout = 15000;
server.listen(port, "127.0.0.1");
