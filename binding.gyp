{
  "targets": [
    {
      "target_name": "kpig",
      "sources": [
        "native/addon/addon.cpp",
        "native/src/core/error.cpp",
        "native/src/core/json.cpp",
        "native/src/core/memory.cpp",
        "native/src/core/safetensors.cpp",
        "native/src/core/threadpool.cpp",
        "native/src/dist/comm_none.cpp",
        "native/src/cpu/attention.cpp",
        "native/src/cpu/cpu_backend.cpp",
        "native/src/cpu/fused_ce.cpp",
        "native/src/cpu/gemm.cpp",
        "native/src/cpu/gemm_amx.cpp",
        "native/src/cpu/head_stream.cpp",
        "native/src/cpu/ops.cpp",
        "native/src/model/adamw.cpp",
        "native/src/model/arch/gemma.cpp",
        "native/src/model/arch/gpt2.cpp",
        "native/src/model/arch/llama.cpp",
        "native/src/model/arch/registry.cpp",
        "native/src/model/config.cpp",
        "native/src/model/backward.cpp",
        "native/src/model/forward.cpp",
        "native/src/model/ig.cpp",
        "native/src/model/linear.cpp",
        "native/src/model/lora.cpp",
        "native/src/model/model.cpp",
        "native/src/model/prefix_cache.cpp",
        "native/src/model/registry.cpp",
        "native/src/model/train.cpp",
        "native/src/model/weights.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/include"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions"],
      "libraries": ["-lpthread"]
    }
  ]
}
