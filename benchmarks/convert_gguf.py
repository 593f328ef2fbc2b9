"""Rewrite a GGUF file's weights as F32 or BF16, keeping its metadata: the float files of llama.cpp's peers.

decode.py compares llama.cpp and openformers on the same weights at each precision. The default model ships
only as Q4_1, so its float precisions are made from it here: every tensor is dequantized to float32 (and rounded
to bfloat16 for BF16) with the `gguf` package. benchmarks/peers.sh runs this, then makes the Q8_0 and Q4_0 files
from the F32 one with llama.cpp's own llama-quantize. Run from the repository root:

    .venv/bin/python benchmarks/convert_gguf.py SOURCE.gguf OUTPUT.gguf --type BF16
"""

import argparse

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize, quantize

# The file-type codes llama.cpp writes to general.file_type (its LLAMA_FTYPE enumeration).
FILE_TYPES = {"F32": 0, "BF16": 32}


def convert(source: str, output: str, type_name: str) -> None:
    reader = GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(output, architecture)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue  # the writer adds the header fields and the architecture itself
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
    writer.add_file_type(FILE_TYPES[type_name])
    target = GGMLQuantizationType[type_name]
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        values = values.reshape(tuple(reversed(tensor.shape.tolist())))
        # 1-D tensors (norms) stay float32, as llama.cpp's converter keeps them.
        kind = target if values.ndim > 1 else GGMLQuantizationType.F32
        data = values if kind == GGMLQuantizationType.F32 else quantize(values, kind)
        writer.add_tensor(tensor.name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("output")
    parser.add_argument("--type", choices=sorted(FILE_TYPES), required=True)
    args = parser.parse_args()
    convert(args.source, args.output, args.type)


if __name__ == "__main__":
    main()
